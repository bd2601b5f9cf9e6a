"""Workers that run prompts for the queue: the protocol (``base``), the in-process one
(``local``), and the Ray pool (``ray_worker``, with its Ray-free helpers in ``pool``)."""
