"""Developer tools that are not part of the app: browser automation for the feed page."""
