"""How requests arrive: REST (HTTP/1.1) and gRPC. A transport decodes, calls the data plane and
encodes; everything else about a request happens in the data plane."""
