"""Route handlers, one controller per resource."""
