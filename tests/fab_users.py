"""Create Airflow users under the FAB auth manager (MWAA's), as ``airflow users create`` does, in one process.

Run by the Airflow environment's interpreter, with ``AIRFLOW_HOME`` and ``AIRFLOW__CORE__AUTH_MANAGER`` set to the
stack's and its database already migrated (``airflow db migrate`` creates FAB's tables)::

    python tests/fab_users.py alice:User bob:Op ...

FAB numbers users in the order they are created (admin, made first, is 1). Each user gets a random password. Prints
one JSON object, ``{name: {"id": "<FAB user id>", "password": ...}}``, the ids read back from FAB's own tables.
``airflow users create`` would do the same one process per user; ``airflow users import`` takes no passwords."""

from __future__ import annotations

import json
import secrets
import sys


def create(users: list[tuple[str, str]]) -> dict[str, dict[str, str]]:
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    created = {}
    with get_application_builder() as appbuilder:
        for name, role_name in users:
            role = appbuilder.sm.find_role(role_name)
            if role is None:
                raise SystemExit(f"{role_name} is not a FAB role: {[r.name for r in appbuilder.sm.get_all_roles()]}")
            if appbuilder.sm.find_user(name):
                raise SystemExit(f"user {name} already exists: its password is unknown here")
            password = secrets.token_urlsafe(16)
            user = appbuilder.sm.add_user(name, name, "tests", f"{name}@example.com", role, password)
            if not user:
                raise SystemExit(f"FAB refused to create user {name}")
            created[name] = {"id": user.get_id(), "password": password}
    return created


if __name__ == "__main__":
    print(json.dumps(create([tuple(arg.split(":", 1)) for arg in sys.argv[1:]])))
