from modelserver import serve

from .model import TorchModel


def main(argv: list[str] | None = None) -> None:
    serve(TorchModel, argv, prog="torchserver",
          description="Serve a PyTorch model (torch.export .pt2 or TorchScript .pt) over KServe "
                      "v1 and Open Inference Protocol v2.")


if __name__ == "__main__":
    main()
