"""`distillrec features`: `<modality>_feat.npy` files built from raw item text or images.

Row i of the file written is item i of the dataset folder it goes into, whatever order the raw file
is in: ids are 0-based item indices (an `itemID` column, `12.jpg`) or original ids (`asin`, …)
translated through the dataset's `i_id_mapping.csv` (`align`). Text is embedded with a
sentence-transformers model, by default the bundled all-MiniLM-L6-v2, offline (`text`); images with a
local CLIP / transformers vision model (`images`). Files are written atomically and never replaced
without `force` (`store`); device, offline loading and progress are shared (`runtime`).

Items without text or image: `missing='error'` (default) refuses, naming how many and a few ids, since
a silent zero row looks like data to every model; `missing='zero'` writes zero rows for them and
`<modality>_mask.npy` (bool [n_items], True = the item had data) so that a tool can tell them apart.
The models and PIL are imported only when features are built, so `distillrec --help` stays fast.
"""

from distillrec.features.images import build_image_features, load_vision_model
from distillrec.features.store import FeatureResult
from distillrec.features.text import build_text_features, load_text_model

__all__ = [
    "FeatureResult",
    "build_image_features",
    "build_text_features",
    "load_text_model",
    "load_vision_model",
]
