"""What moto 5.2.5's SageMaker endpoints lack, simulated where AWS's behaviour is documented, so the deployment stage
(``retrain.aws.endpoints``) meets a simulator that fails where AWS would.

moto has CreateModel, CreateEndpointConfig, CreateEndpoint, DescribeEndpoint and UpdateEndpointWeightsAndCapacities,
but:

- **no UpdateEndpoint** (the call a deployment makes to point an endpoint at a new config). It is added here: it
  refuses an endpoint or config that does not exist, or an endpoint that is not ``InService`` (AWS refuses an update
  while one is in progress), then serves the new config's variants at their initial weights. AWS does this blue/green
  over minutes; here it is immediate;
- **ShadowProductionVariants are dropped** from CreateEndpointConfig. They are kept here, checked as production variants
  are (the model must exist), and returned by DescribeEndpointConfig and DescribeEndpoint. No copy of a request reaches
  a shadow: moto's InvokeEndpoint answers with canned data and runs no model;
- **a variant of weight 0 loses its weight** (moto tests ``if weight:``); AWS reports ``CurrentWeight: 0.0``;
- **names are reused silently**: CreateModel, CreateEndpointConfig and CreateEndpoint overwrite an existing resource.
  AWS refuses ("Cannot create already existing ..."), so these refuse too.

Not simulated at all: instances, latency, the metrics SageMaker publishes to CloudWatch, alarm evaluation (tests put
metric data and set alarm states themselves, and say so), and blue/green guardrails.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def _exists(kind: str, name: str) -> Exception:
    from moto.sagemaker.exceptions import ValidationError

    return ValidationError(message=f'Cannot create already existing {kind} "{name}".')


def _weights(variants: list[dict[str, Any]], configured: list[dict[str, Any]]) -> None:
    initial = {v["VariantName"]: float(v.get("InitialVariantWeight", 1.0)) for v in configured}
    for variant in variants:
        variant["CurrentWeight"] = variant["DesiredWeight"] = initial[variant["VariantName"]]


@contextmanager
def simulated_endpoint_behaviour() -> Iterator[None]:  # noqa: C901 - one closure per patched handler
    """Patch moto's SageMaker handlers in this process (where the ThreadedMotoServer runs); see the module docstring."""
    from moto.core.responses import ActionResult
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.responses import SageMakerResponse

    originals = {
        name: getattr(SageMakerResponse, name)
        for name in (
            "create_model",
            "create_endpoint_config",
            "describe_endpoint_config",
            "create_endpoint",
            "describe_endpoint",
        )
    }

    def create_model(response):
        name = json.loads(response.body)["ModelName"]
        if name in response.sagemaker_backend._models:
            raise _exists("model", name)
        return originals["create_model"](response)

    def create_endpoint_config(response):
        request = json.loads(response.body)
        backend, name = response.sagemaker_backend, request["EndpointConfigName"]
        if name in backend.endpoint_configs:
            raise _exists("endpoint configuration", name)
        shadows = request.get("ShadowProductionVariants", [])
        backend.validate_production_variants(shadows)
        result = originals["create_endpoint_config"](response)
        backend.endpoint_configs[name].shadow_production_variants = shadows
        return result

    def describe_endpoint_config(response):
        result = originals["describe_endpoint_config"](response)
        config = response.sagemaker_backend.endpoint_configs[json.loads(response.body)["EndpointConfigName"]]
        shadows = getattr(config, "shadow_production_variants", [])
        return ActionResult({**result.result, "ShadowProductionVariants": shadows}) if shadows else result

    def _serve(backend, endpoint, config_name: str) -> None:
        config = backend.endpoint_configs[config_name]
        endpoint.endpoint_config_name = config_name
        endpoint.production_variants = endpoint._process_production_variants(config.production_variants)
        _weights(endpoint.production_variants, config.production_variants)
        endpoint.shadow_production_variants = endpoint._process_production_variants(
            getattr(config, "shadow_production_variants", [])
        )
        _weights(endpoint.shadow_production_variants, getattr(config, "shadow_production_variants", []))

    def create_endpoint(response):
        request = json.loads(response.body)
        backend, name = response.sagemaker_backend, request["EndpointName"]
        if name in backend.endpoints:
            raise _exists("endpoint", name)
        result = originals["create_endpoint"](response)
        _serve(backend, backend.endpoints[name], request["EndpointConfigName"])
        return result

    def describe_endpoint(response):
        result = originals["describe_endpoint"](response)
        endpoint = response.sagemaker_backend.endpoints[json.loads(response.body)["EndpointName"]]
        shadows = getattr(endpoint, "shadow_production_variants", [])
        described = {k: v for k, v in result.result.items() if k != "ShadowProductionVariants"}  # AWS omits it empty
        return ActionResult({**described, **({"ShadowProductionVariants": shadows} if shadows else {})})

    def update_endpoint(response):
        request = json.loads(response.body)
        backend, name, config_name = response.sagemaker_backend, request["EndpointName"], request["EndpointConfigName"]
        endpoint = backend.endpoints.get(name)
        if endpoint is None:
            raise ValidationError(message=f'Could not find endpoint "{name}".')
        if config_name not in backend.endpoint_configs:
            raise ValidationError(message=f'Could not find endpoint configuration "{config_name}".')
        if endpoint.endpoint_status != "InService":
            raise ValidationError(
                message=f'Cannot update in-progress endpoint "{endpoint.arn}" (status {endpoint.endpoint_status}).'
            )
        _serve(backend, endpoint, config_name)
        endpoint.endpoint_status = "InService"
        return ActionResult({"EndpointArn": endpoint.arn})

    patched = {
        "create_model": create_model,
        "create_endpoint_config": create_endpoint_config,
        "describe_endpoint_config": describe_endpoint_config,
        "create_endpoint": create_endpoint,
        "describe_endpoint": describe_endpoint,
        "update_endpoint": update_endpoint,
    }
    for name, handler in patched.items():
        setattr(SageMakerResponse, name, handler)
    try:
        yield
    finally:
        for name in patched:
            if name in originals:
                setattr(SageMakerResponse, name, originals[name])
            else:
                delattr(SageMakerResponse, name)
