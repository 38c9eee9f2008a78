"""Wire formats of the protocols, as pure functions between bytes and the data plane's types:
KServe v1, Open Inference Protocol v2 as JSON, binary tensors and protobuf, Triton's model
configuration."""
