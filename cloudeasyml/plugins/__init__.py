"""The plugin host: hookspecs, the ModelPlugin base class, discovery through entry points."""
