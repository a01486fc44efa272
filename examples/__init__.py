"""Runnable examples for wsservice (``examples.chat`` and ``examples/chat.tac``)."""
