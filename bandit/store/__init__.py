"""Redis: the store, its Lua scripts and keys, the URLs of every deployment kind, the
embedded server."""
