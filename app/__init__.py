"""The application layer: sources, event bus, TUI, websocket feed, writers and the command line."""

__version__ = "0.1.0"
