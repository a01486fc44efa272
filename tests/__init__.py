"""The wsservice trial suite."""
