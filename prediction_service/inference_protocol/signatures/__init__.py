"""Every model's protocol signature: one small declaration per model (its own module here)."""

from prediction_service.container import Services
from prediction_service.inference_protocol.signature import ModelSignature
from prediction_service.inference_protocol.signatures import mnist, penguins


def all_signatures(services: Services) -> dict[str, ModelSignature]:
    signatures = (penguins.signature(services.registry), mnist.signature(services.digits))
    return {signature.name: signature for signature in signatures}
