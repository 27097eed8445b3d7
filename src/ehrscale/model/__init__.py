"""The model: its shape, counts and FLOPs (:mod:`.config`, torch-free) and the decoder (:mod:`.gpt`)."""
