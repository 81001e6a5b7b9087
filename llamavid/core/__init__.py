"""The bottom layer: what every other layer shares and nothing in it imports from above: error types that
carry data (``errors``), the options of a question validated once (``options``), callbacks, fixed choices,
time codes, atomic and resumable file writes (``fileio``) and OS file locks (``locking``). No torch.
"""
