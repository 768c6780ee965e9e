"""The commands of `iwu`, one module each.

Each module has `add(sub)`, which adds its subparser to the subparsers of `iwu` (iwu.cli builds the
parser and keeps their order), and `run(args) -> int`, the command itself, its exit status. A module's
top level imports only argparse and iwu.commands.arguments, so `iwu --help` and `iwu COMMAND --help`
stay instant; what a command needs (torch, lightning, the engine, the datasets) it imports in `run`.
"""
