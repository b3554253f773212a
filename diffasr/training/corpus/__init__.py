"""The synthetic corpus: TTS synthesis, perturbed copies, augmentation, sentence files, simulated misspellings."""
