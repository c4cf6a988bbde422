"""Item images -> `<modality>_feat.npy` with a vision model whose weights are on this machine.

No vision model ships with distillrec and nothing is downloaded, so `--model` must name a local folder:
a sentence-transformers CLIP folder (`modules.json`; `SentenceTransformer(...).save(PATH)`) or a
transformers vision model folder (`config.json` + the image processor's `preprocessor_config.json`;
`model.save_pretrained(PATH)` and `processor.save_pretrained(PATH)`). Images are read with PIL and
preprocessed by the model's own processor (torchvision is not needed). Item i's image is the file whose
stem is item i's id, e.g. `12.jpg`, or `B00O47ILVA.png` with `--id-column asin`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from distillrec.errors import DataError, DistillrecError
from distillrec.features.align import (
    INDEX_COLUMN,
    assemble,
    check_options,
    check_unique,
    dataset_items,
    missing_items,
    normalize_rows,
    resolve_ids,
)
from distillrec.features.runtime import offline, one_line, progress, resolve_device
from distillrec.features.store import FeatureResult, feature_path, write_features

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
MODEL_HINT = (
    "image features need a vision model with local weights: --model PATH, a sentence-transformers CLIP "
    "folder (SentenceTransformer('clip-ViT-B-32').save(PATH) on a machine with internet access) or a "
    "transformers vision model folder (model.save_pretrained(PATH) and the image processor's "
    "save_pretrained(PATH))"
)

ImageEncoder = Callable[[list[Any]], np.ndarray]  # PIL images -> float32 [n, dim]


def list_images(folder: Path | str) -> tuple[list[str], list[Path]]:
    """(stems, files) of the images directly inside `folder`, sorted; a stem used twice is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (--images takes a folder of <item id>.jpg/.png files)")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )
    if not files:
        raise DataError(f"{folder}: no images found (files named <item id> with {', '.join(IMAGE_SUFFIXES)})")
    seen: dict[str, Path] = {}
    for p in files:
        if p.stem in seen:
            raise DataError(f"{folder}: two images for item {p.stem!r} ({seen[p.stem].name} and {p.name})")
        seen[p.stem] = p
    return [p.stem for p in files], files


def _open_image(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as an image ({one_line(exc)})") from None


def _pooled(output: Any) -> Any:
    """The image embedding in a transformers output: projected embeds, else pooled, else mean of tokens."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    for name in ("image_embeds", "pooler_output"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    hidden = getattr(output, "last_hidden_state", None)
    if isinstance(hidden, torch.Tensor):
        return hidden.mean(dim=1) if hidden.ndim == 3 else hidden
    raise DistillrecError("the vision model's output has no image embedding (image_embeds, pooler_output)")


def _transformers_encoder(folder: Path, device: str) -> ImageEncoder:
    import torch
    import transformers

    if not (folder / "preprocessor_config.json").is_file():
        raise DistillrecError(
            f"--model {folder}: no preprocessor_config.json (save the model's image processor there with "
            "save_pretrained), so images cannot be prepared for it"
        )
    try:
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        arch = (getattr(config, "architectures", None) or [None])[0]
        cls = getattr(transformers, arch, None) if arch else None
        model = (cls or transformers.AutoModel).from_pretrained(folder, local_files_only=True)
        try:
            processor = transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        except (ImportError, ValueError):  # a processor that would need torchvision: the PIL one
            processor = transformers.AutoImageProcessor.from_pretrained(
                folder, local_files_only=True, use_fast=False
            )
    except Exception as exc:  # a user's folder can fail in many library-specific ways
        raise DistillrecError(
            f"--model {folder}: cannot be loaded as a vision model ({one_line(exc)})"
        ) from None
    model = model.to(device).eval()
    features = getattr(model, "get_image_features", None)

    def encode(images: list[Any]) -> np.ndarray:
        pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device)
        with torch.inference_mode():
            out = features(pixel_values=pixels) if features is not None else model(pixel_values=pixels)
            return _pooled(out).flatten(1).float().cpu().numpy()

    return encode


def _sentence_transformers_encoder(folder: Path, device: str) -> ImageEncoder:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise DistillrecError(
            'a sentence-transformers model folder needs sentence-transformers: pip install -e ".[features]"'
        ) from None
    try:
        model = SentenceTransformer(str(folder), device=device, local_files_only=True)
    except Exception as exc:  # a user's folder can fail in many library-specific ways
        raise DistillrecError(f"--model {folder}: cannot be loaded ({one_line(exc)})") from None

    def encode(images: list[Any]) -> np.ndarray:
        try:
            out = model.encode(images, batch_size=len(images), convert_to_numpy=True, show_progress_bar=False)
        except (ValueError, TypeError) as exc:
            raise DistillrecError(f"--model {folder}: cannot embed images ({one_line(exc)})") from None
        return np.asarray(out, dtype=np.float32).reshape(len(images), -1)

    return encode


def _model_folder(model: str | Path | None) -> Path:
    """The model folder named by --model; checked before anything else, since without it nothing can run."""
    if model is None or not str(model).strip():
        raise DistillrecError(MODEL_HINT)
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise DistillrecError(f"--model {model}: no such folder; {MODEL_HINT}")
    return folder


def load_vision_model(model: str | Path | None, device: str) -> tuple[ImageEncoder, str]:
    """An encoder of PIL images from a local folder (sentence-transformers or transformers), and its name."""
    folder = _model_folder(model)
    with offline():
        if (folder / "modules.json").is_file():
            return _sentence_transformers_encoder(folder, device), str(folder)
        if (folder / "config.json").is_file():
            return _transformers_encoder(folder, device), str(folder)
    raise DistillrecError(
        f"--model {folder}: neither a sentence-transformers folder (modules.json) nor a transformers model "
        f"folder (config.json); {MODEL_HINT}"
    )


def embed_images(encoder: ImageEncoder, files: list[Path], batch_size: int, quiet: bool = True) -> np.ndarray:
    """float32 [len(files), dim], reading only one batch of images at a time."""
    parts = []
    with progress(len(files), "embedding images", quiet) as advance:
        for start in range(0, len(files), batch_size):
            batch = files[start : start + batch_size]
            parts.append(
                np.asarray(encoder([_open_image(p) for p in batch]), dtype=np.float32).reshape(len(batch), -1)
            )
            advance(len(batch))
    return np.concatenate(parts)


def build_image_features(
    dataset: Path | str,
    image_dir: Path | str,
    *,
    model: str | Path | ImageEncoder | None = None,
    id_column: str = INDEX_COLUMN,
    modality: str = "image",
    batch_size: int = 32,
    device: str = "auto",
    missing: str = "error",
    normalize: bool = True,
    force: bool = False,
    quiet: bool = True,
) -> FeatureResult:
    """Embed the items' images and write `<dataset>/<modality>_feat.npy`, row i = item i.

    File stems are item ids: 0-based indices with `id_column='itemID'`, original ids (looked up in the
    dataset's item map) with any other name. `model`: a local folder, or an encoder from
    `load_vision_model` (PIL images -> array). `missing` as for text.
    """
    check_options(modality, missing, batch_size)
    if not callable(model):
        _model_folder(model)
    items = dataset_items(dataset)
    path = feature_path(items.folder, modality, force)
    source = str(image_dir)
    stems, files = list_images(image_dir)
    names = [p.name for p in files]
    index = resolve_ids(stems, id_column, items, source, names)
    check_unique(index, stems, source, names)
    has = np.zeros(items.n_items, dtype=bool)
    has[index] = True
    report = missing_items(has, items, "image", source, missing, modality)

    device = resolve_device(device)
    if callable(model):
        encoder, name = model, getattr(model, "__name__", type(model).__name__)
    else:
        encoder, name = load_vision_model(model, device)
    start = time.perf_counter()
    vectors = embed_images(encoder, files, batch_size, quiet)
    if normalize:
        vectors = normalize_rows(vectors)
    seconds = time.perf_counter() - start
    matrix = assemble(index, vectors, items.n_items, source)
    mask_path = write_features(path, matrix, has if missing == "zero" else None)
    log.info("wrote %s: %d items x %d (%s, %.1f s)", path, items.n_items, matrix.shape[1], name, seconds)
    return FeatureResult(
        path=path,
        n_items=items.n_items,
        dim=int(matrix.shape[1]),
        n_with_data=int(has.sum()),
        model=name,
        device=device,
        seconds=seconds,
        mask_path=mask_path,
        missing_report=report,
    )
