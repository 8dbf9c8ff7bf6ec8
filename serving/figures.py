"""Matplotlib figures as inline PNG data, for the self-contained HTML pages (monitoring, strategy report)."""

from __future__ import annotations

import base64
import io


def png_base64(fig, dpi: int) -> str:
    """The figure as base64 PNG text (for `src="data:image/png;base64,…"`); the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()
