"""LoRA and its kin (LoCon, LoHa, LoKr, IA3, OFT, BOFT, full diffs) as weight patches on MODEL and CLIP values.

``keys`` maps the names LoRA files use (kohya, LDM, diffusers, PEFT, ComfyUI) to our
parameter names; ``kohya``, ``lycoris``, ``oft`` hold the adapters (closed forms);
``diffusers_peft`` the diffusers / PEFT spellings of their parts; ``load`` reads a file
into adapters; ``synthetic`` writes seeded random LoRA files for tests and ``make-model``.
"""
