"""Tiny, randomly initialised CLIP, SigLIP and CLAP checkpoints on disk, for tests without a network.

    from gramx_hf.testing import save_tiny_clip

    def test_import(tmp_path):
        folder = save_tiny_clip(tmp_path / "clip")       # what `hf download` would give, only tiny
        gramx_hf.import_space(folder, tmp_path / "model")

Each folder holds what ``save_pretrained`` writes for the model and for its processor: the
config, ``model.safetensors``, the tokenizer files (a byte-level BPE for CLIP and CLAP, a
SentencePiece model for SigLIP, built here) and the image processor or audio feature
extractor. The models have 2 layers of width 32 and 16- or 32-dimensional spaces, so the
whole import / embed / extend / bridge / LoRA path runs in seconds on a CPU.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

__all__ = ["TEXTS", "save_tiny_clip", "save_tiny_siglip", "save_tiny_clap", "TINY_MODELS"]

#: Sentences the SigLIP tokenizer is trained on (any text still tokenises).
TEXTS = ("a photo of a cat", "a dog on the grass", "the sound of rain", "a red car drives by",
         "zero one two three four five six seven eight nine", "a cube, a sphere and a cone")

_TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}


def _byte_vocab(specials_first: list[str], specials_last: list[str]) -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    return {token: i for i, token in enumerate(specials_first + chars + [c + "</w>" for c in chars] + specials_last)}


def _save(model_cls, config, folder: Path, processor, seed: int) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model_cls(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def save_tiny_clip(path: str | Path, seed: int = 0) -> str:
    """A random ``CLIPModel`` (16-dimensional space, 32x32 images) with its tokenizer and image processor."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    vocab = _byte_vocab([], ["<|startoftext|>", "<|endoftext|>"])
    eos, bos = vocab["<|endoftext|>"], vocab["<|startoftext|>"]
    config = CLIPConfig(
        text_config={**_TOWER, "vocab_size": len(vocab), "max_position_embeddings": 32, "eos_token_id": eos,
                     "bos_token_id": bos, "pad_token_id": eos},
        vision_config={**_TOWER, "image_size": 32, "patch_size": 8}, projection_dim=16)
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=CLIPTokenizer(vocab=vocab, merges=[], model_max_length=32))
    return _save(CLIPModel, config, Path(path), processor, seed)


def save_tiny_siglip(path: str | Path, seed: int = 0) -> str:
    """A random ``SiglipModel`` (32-dimensional space, 32x32 images) with a SentencePiece tokenizer."""
    import sentencepiece
    from transformers import SiglipConfig, SiglipModel, SiglipProcessor, SiglipTokenizer
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXTS * 10), model_writer=model, vocab_size=48, model_type="unigram", pad_id=0,
        eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, hard_vocab_limit=False, minloglevel=2)
    (folder / "spiece.model").write_bytes(model.getvalue())
    tokenizer = SiglipTokenizer(vocab_file=str(folder / "spiece.model"), model_max_length=16)
    config = SiglipConfig(
        text_config={**_TOWER, "vocab_size": tokenizer.vocab_size, "max_position_embeddings": 16, "pad_token_id": 0,
                     "eos_token_id": 1, "bos_token_id": None},
        vision_config={**_TOWER, "image_size": 32, "patch_size": 8})
    processor = SiglipProcessor(image_processor=SiglipImageProcessorPil(size={"height": 32, "width": 32}),
                                tokenizer=tokenizer)
    return _save(SiglipModel, config, folder, processor, seed)


def save_tiny_clap(path: str | Path, seed: int = 0) -> str:
    """A random ``ClapModel`` (16-dimensional space) with its tokenizer and a 16 kHz, 1 s feature extractor."""
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    vocab = _byte_vocab(["<s>", "<pad>", "</s>", "<unk>"], ["<mask>"])
    config = ClapConfig(
        text_config={**_TOWER, "vocab_size": len(vocab), "max_position_embeddings": 34},
        audio_config={"spec_size": 64, "num_mel_bins": 32, "patch_size": 4, "patch_stride": [4, 4], "window_size": 4,
                      "depths": [1, 1], "num_attention_heads": [2, 2], "patch_embeds_hidden_size": 16,
                      "hidden_size": 32, "num_hidden_layers": 2},
        projection_dim=16)
    extractor = ClapFeatureExtractor(feature_size=32, sampling_rate=16000, hop_length=160, max_length_s=1,
                                     fft_window_size=1024, frequency_max=8000, truncation="rand_trunc")
    processor = ClapProcessor(feature_extractor=extractor,
                              tokenizer=RobertaTokenizer(vocab=vocab, merges=[], model_max_length=32))
    return _save(ClapModel, config, Path(path), processor, seed)


#: Architecture name -> the function that saves a tiny one.
TINY_MODELS = {"CLIPModel": save_tiny_clip, "SiglipModel": save_tiny_siglip, "ClapModel": save_tiny_clap}
