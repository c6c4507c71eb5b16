"""A small dependency-free plot of the half-map FSC (QPainter), for a napari dock."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

THRESHOLDS = ((0.143, "#e0a030"), (0.5, "#5fb0e8"))


class FscPlot(QWidget):
    """FSC against spatial frequency (1/A), with the 0.143 and 0.5 crossings marked."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("FscPlot")
        self.setMinimumSize(260, 150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.curve: np.ndarray | None = None
        self.voxel_size = 1.0
        self.resolutions: dict[float, float | None] = {}
        self.title = "Half-map FSC (unmasked)"

    def sizeHint(self) -> QSize:
        return QSize(340, 230)

    def set_curve(self, fsc, voxel_size: float, res_0143=None, res_05=None, title=None) -> None:
        self.curve = None if fsc is None else np.asarray(fsc, dtype=np.float64)
        self.voxel_size = float(voxel_size) if voxel_size else 1.0
        self.resolutions = {0.143: res_0143, 0.5: res_05}
        if title:
            self.title = title
        self.update()

    def clear(self) -> None:
        self.set_curve(None, 1.0)

    def summary(self) -> str:
        parts = [f"{t:g}: {r:.2f} \u00c5" for t, r in self.resolutions.items() if r is not None]
        return "  ".join(parts)

    # -- drawing
    def _frequencies(self, curve: np.ndarray) -> np.ndarray:
        n = 2 * (curve.size - 1)
        return np.arange(curve.size) / (n * self.voxel_size)

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        p = QPainter(self)
        try:
            self._paint(p)
        finally:
            p.end()  # an active painter left behind corrupts the backing store

    def _paint(self, p: QPainter) -> None:
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        bg, fg = pal.window().color(), pal.windowText().color()
        p.fillRect(self.rect(), bg)
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.9))
        p.setFont(font)
        fm = p.fontMetrics()
        h = fm.height()
        left, right, top, bottom = fm.horizontalAdvance("-0.0") + 12, 12, h + 10, 2.6 * h
        plot = QRectF(left, top, self.width() - left - right, self.height() - top - bottom)
        centre = Qt.AlignmentFlag.AlignCenter
        p.setPen(fg)
        p.drawText(QRectF(0, 2, self.width(), h), centre, self.title)
        if plot.width() < 20 or plot.height() < 20:
            return
        if self.curve is None or self.curve.size < 2:
            p.drawText(plot, centre, "no FSC yet (a finished job with half sets has one)")
            return
        freq = self._frequencies(self.curve)
        fmax = freq[-1]
        y0, y1 = -0.2, 1.05

        def pt(f, c):
            x = plot.left() + plot.width() * f / fmax
            y = plot.bottom() - plot.height() * (c - y0) / (y1 - y0)
            return QPointF(x, y)

        grid = QColor(fg)
        grid.setAlpha(60)
        p.setPen(QPen(grid, 1))
        for c in (0.0, 0.5, 1.0):
            p.drawLine(pt(0, c), pt(fmax, c))
        p.setPen(fg)
        p.drawRect(plot)
        for c in (0.0, 0.5, 1.0):
            q = pt(0, c)
            right_mid = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
            p.drawText(QRectF(0, q.y() - h / 2, left - 4, h), right_mid, f"{c:g}")
        # x ticks labelled by resolution (A), the way cryo-EM reads an FSC
        for k in range(1, 5):
            f = fmax * k / 4
            q = pt(f, y0)
            p.drawLine(q, QPointF(q.x(), q.y() + 4))
            p.drawText(QRectF(q.x() - 40, q.y() + 4, 80, h), centre, f"{1 / f:.1f}")
        axis = QRectF(plot.left(), self.height() - h - 2, plot.width(), h)
        p.drawText(axis, centre, "resolution (\u00c5)")
        for t, colour in THRESHOLDS:
            pen = QPen(QColor(colour), 1, Qt.PenStyle.DashLine)
            p.setPen(pen)
            p.drawLine(pt(0, t), pt(fmax, t))
            r = self.resolutions.get(t)
            if r:
                x = pt(1 / r, t)
                p.drawLine(QPointF(x.x(), plot.top()), QPointF(x.x(), plot.bottom()))
                label = f"{r:.1f} \u00c5 @ {t:g}"
                lx = x.x() + 3
                if lx + fm.horizontalAdvance(label) > plot.right():  # keep it inside
                    lx = x.x() - 3 - fm.horizontalAdvance(label)
                p.drawText(QPointF(lx, pt(0, t).y() - 3), label)
        path = QPainterPath(pt(freq[0], float(self.curve[0])))
        for f, c in zip(freq[1:], self.curve[1:], strict=True):
            path.lineTo(pt(f, float(np.clip(c, y0, y1))))
        p.setPen(QPen(QColor("#e8e8e8") if bg.lightness() < 128 else QColor("#202020"), 2))
        p.drawPath(path)
