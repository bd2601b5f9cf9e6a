"""Workers that run prompts for the queue: the protocol (``base``) and the in-process one (``local``)."""
