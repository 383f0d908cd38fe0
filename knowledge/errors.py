"""The one base class of the knowledge layer's errors, so callers can catch them together."""


class KnowledgeError(Exception):
    """A tree, idea, store or embedding problem; the message names what is wrong and where."""
