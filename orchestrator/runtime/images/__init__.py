"""Images: the content-addressed store, layer unpacking, archives and registries."""
