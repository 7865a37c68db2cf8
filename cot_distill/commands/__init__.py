"""One module per `cot-distill` subcommand; each exposes `register(subparsers)`."""
