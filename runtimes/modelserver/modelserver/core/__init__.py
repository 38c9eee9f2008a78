"""The data plane: every request's life (admission, deadline, batching, errors, recording), and
the models it serves."""
