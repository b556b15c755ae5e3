"""The protocol's answers for every model with a signature: metadata, readiness, config, inference.

Only the version that serves, and the shadow if one is set, can be addressed: a request naming another
one is told how to serve it. A request to the shadow's version is answered by the shadow alone (as a
candidate's trial: it is not compared with the serving version).
"""

from typing import Any

from prediction_service.core.errors import NotFound
from prediction_service.inference_protocol.signature import ModelSignature
from prediction_service.inference_protocol.tensors import encode_response, parse_request
from prediction_service.models.interface import ServedModel
from prediction_service.models.registry import Registry

EXTENSIONS = ["binary_tensor_data", "model_configuration"]


class InferenceProtocol:
    def __init__(
        self, registry: Registry, signatures: dict[str, ModelSignature], max_batch_items: int, server: tuple[str, str]
    ) -> None:
        self.registry = registry
        self.server_name, self.server_version = server
        self.signatures = signatures
        self.max_batch_items = max_batch_items

    def server_metadata(self) -> dict[str, Any]:
        return {"name": self.server_name, "version": self.server_version, "extensions": EXTENSIONS}

    def server_ready(self) -> bool:
        return self.registry.ready()

    def model_ready(self, name: str, version: str | None) -> bool:
        self._signature(name)
        if self.registry.serving_version(name) is None:
            return False
        self._addressed(name, version)
        return True

    def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        signature = self._signature(name)
        shadow = self._addressed(name, version)
        if shadow is not None:
            return signature.metadata([shadow.version])
        if version is not None:
            return signature.metadata([int(version)])
        return signature.metadata(self._answering_versions(name))

    def model_config(self, name: str, version: str | None) -> dict[str, Any]:
        signature = self._signature(name)
        self._addressed(name, version)
        return signature.triton_config(self.max_batch_items)

    async def infer(
        self, name: str, version: str | None, body: bytes, header_length: str | None, request_id: str | None
    ) -> tuple[bytes, dict[str, str], int]:
        """The response body, its headers, and the model version that answered."""
        signature = self._signature(name)
        shadow = self._addressed(name, version)
        request = parse_request(body, header_length)
        signature.check_inputs(request.inputs, self.max_batch_items)
        signature.check_outputs(request.outputs)
        prediction = await signature.predict(request.inputs, shadow)
        outputs = prediction.outputs
        if request.outputs:
            outputs = [tensor for tensor in outputs if tensor.name in request.outputs]
        body, headers = encode_response(
            name,
            prediction.model_version,
            request,
            outputs,
            request.id if request.id is not None else request_id,
            {"prediction_ids": prediction.prediction_ids} if prediction.prediction_ids else None,
        )
        return body, headers, prediction.model_version

    def _signature(self, name: str) -> ModelSignature:
        signature = self.signatures.get(name)
        if signature is None:
            raise NotFound(f"there is no model {name!r}; models: {', '.join(self.signatures)}")
        return signature

    def _answering_versions(self, name: str) -> list[int]:
        shadow = self.registry.shadows.get(name)
        return [self.registry.get(name).version, *([shadow.version] if shadow is not None else [])]

    def _addressed(self, name: str, version: str | None) -> ServedModel[Any] | None:
        """None for the serving version (unnamed or named), the loaded shadow for its version; else a 404 that
        says how to have the version answer."""
        serving = self.registry.get(name).version  # 503 with the reason while the model is not loaded
        if version is None or version == str(serving):
            return None
        shadow = self.registry.shadows.get(name)
        if shadow is not None and version == str(shadow.version):
            return shadow
        answering = f"version {serving}" + (f" and shadow version {shadow.version}" if shadow is not None else "")
        known = [stored.version for stored in self.registry.versions(name)[0]]
        if version.isdigit() and int(version) in known:
            raise NotFound(
                f"version {version} of {name!r} is neither serving nor in shadow (answering: {answering}); "
                f"to serve it: POST /models/{name}/versions/{version}/activate, to try it beside the serving "
                f"version: POST /models/{name}/versions/{version}/shadow (admin token)"
            )
        raise NotFound(
            f"{name!r} has no version {version!r}; its versions: {', '.join(map(str, known))} "
            f"(answering: {answering}; POST /models/{name}/versions/{{version}}/activate serves another)"
        )
