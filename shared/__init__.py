"""convmesh's own library: settings, topic registry, codecs, logging, app factory, errors."""
