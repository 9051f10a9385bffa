"""Litestream's formats and nothing else: the v0.3 generations layout and the v0.5 LTX layout, listed, planned and restored."""
