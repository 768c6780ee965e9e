"""Figures as drawn, before they are written: tests read what they show from the matplotlib objects."""


def drawn_figures(monkeypatch, module) -> dict:
    """{path: figure} of every figure `module` (an `iwu.plots` module) writes from now on through `save_png`."""
    drawn = {}
    save_png = module.save_png

    def keep(fig, path, **kwargs):
        drawn[path] = fig
        return save_png(fig, path, **kwargs)

    monkeypatch.setattr(module, "save_png", keep)
    return drawn
