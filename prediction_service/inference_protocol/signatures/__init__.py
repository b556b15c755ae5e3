"""Every model's protocol signature: one small declaration per model (its own module here)."""

from prediction_service.inference_protocol.signature import ModelSignature
from prediction_service.inference_protocol.signatures import mnist, penguins
from prediction_service.services import Serving


def all_signatures(serving: Serving) -> dict[str, ModelSignature]:
    signatures = (penguins.signature(serving.registry), mnist.signature(serving.mnist))
    return {signature.name: signature for signature in signatures}
