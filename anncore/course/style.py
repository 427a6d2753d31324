"""One figure style for every notebook: the same fonts, colours, colour map and image format wherever a learner
looks.

Every notebook calls :func:`use_course_style` once, in the cell after its parameters. It sets matplotlib's
``rcParams`` (the figures of :mod:`anncore.course.viz`, of pandas and of seaborn all read them when they are built)
and, inside IPython, the inline backend's image format (``matplotlib.style.use`` with a dict: a style sheet held in
code). The choices:

* **JPEG, one format everywhere.** The figures are photo-like (images, attention overlays), and JPEG keeps each
  committed notebook a fraction of its PNG size (the course keeps every notebook under 1 MB).
* **The Okabe-Ito colour cycle** for lines and bars: eight colours that stay distinct under the common forms of
  colour blindness; the first four are the heads' colours when a figure compares heads.
* **magma** (:data:`anncore.course.viz.ATTENTION_CMAP`) as the default colour map, so a heat map drawn by a
  learner's own ``imshow`` reads like the course's attention maps.
* **Small, even type** (9 pt, titles 10 pt) so that multi-panel figures keep their labels apart; no grid by default
  (images and attention maps have none), a light one where a line plot turns it on.
"""

from __future__ import annotations

from typing import Any

import matplotlib.style
from matplotlib.rcsetup import cycler

from anncore.course.viz import ATTENTION_CMAP

#: Okabe & Ito's colour-blind-safe palette (https://jfly.uni-koeln.de/color/), black last.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")

#: The matplotlib settings of the course's one style (module docstring).
COURSE_RC: dict[str, Any] = {
    "axes.prop_cycle": cycler(color=list(OKABE_ITO)),
    "image.cmap": ATTENTION_CMAP,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "figure.titlesize": 11,
    "lines.linewidth": 1.6,
    "lines.markersize": 5,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
}

#: The one image format of the course's figures (module docstring).
IMAGE_FORMAT = "jpeg"


def use_course_style() -> None:
    """Apply the course's figure style (:data:`COURSE_RC`) and, in a notebook, its image format (JPEG)."""
    matplotlib.style.use(COURSE_RC)
    try:
        from IPython import get_ipython  # deferred: Jupyter's own packages, not dependencies anncore declares
    except ImportError:  # pragma: no cover - IPython comes with the course extra
        return
    if get_ipython() is not None:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats(IMAGE_FORMAT)
