"""Charts: what a reader needs to see in them, checked on the figure before it is written."""

from prismlab.analysis import plots


def test_the_frontier_chart_has_one_legend_below_every_panel(tmp_path, monkeypatch):
    drawn = []
    real = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path, **kw: (drawn.append(fig), real(fig, path, **kw)))
    panels = {
        "32 px": {"ours": [(0.2, 0.30, 0.28, 0.32, "ours")], "base": [(5.0, 0.20, 0.18, 0.22, "resnet34_lowres")]},
        "64 px": {"ours": [(0.8, 0.40, 0.38, 0.42, "ours")], "base": []},
    }
    plots.plot_frontier(panels, tmp_path / "f.png")
    (fig,) = drawn
    assert [ax.get_legend() for ax in fig.axes] == [None, None]  # inside a panel it covered points
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ours", "base"]
    assert [ax.get_title() for ax in fig.axes] == ["32 px", "64 px"]
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
