"""What a framework runtime builds on: finding its model file, fitting request tensors to what
the framework takes, and the registry of installed runtimes."""
