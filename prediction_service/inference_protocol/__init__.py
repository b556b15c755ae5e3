"""The Open Inference Protocol (KServe V2 REST), without any web framework.

`tensors` reads requests and writes responses (JSON and the binary tensor data
extension), `signature` describes a model's inputs and outputs (each model
declares its own: `protocol_signature` in models.interface), and `service` answers
the protocol's questions (metadata, readiness, Triton's config, inference) for
every model.
"""
