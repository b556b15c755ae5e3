"""The Open Inference Protocol (KServe V2 REST), without any web framework.

`tensors` reads requests and writes responses (JSON and the binary tensor data
extension), `signature` describes a model's inputs and outputs, `signatures/`
holds one small declaration per model, and `service` answers the protocol's
questions (metadata, readiness, Triton's config, inference) for every model.
"""
