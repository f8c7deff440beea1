"""An example sqlstream plugin: the ``sequence`` source and the ``text`` function pack."""
