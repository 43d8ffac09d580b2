"""Generated topology files of any size, shaped like full-edge: compute at every antenna, central offices, data
centres and one cloud, in a tree (for large-input tests and benchmarks; no such file is committed)."""

from __future__ import annotations

from pathlib import Path


def full_edge_like_yaml(n_antennas: int, antennas_per_co: int = 100, cos_per_dc: int = 10,
                        name: str | None = None) -> str:
    """Returns the text of a topology file: `n_antennas` antennas with 4 cores each, one central office per
    `antennas_per_co` antennas, one data centre per `cos_per_dc` central offices, one cloud. Radio delays and
    link delays vary by position so that paths differ; the figures are full-edge's."""
    if n_antennas < 1 or antennas_per_co < 1 or cos_per_dc < 1:
        raise ValueError("n_antennas, antennas_per_co and cos_per_dc must be at least 1")
    n_co = -(-n_antennas // antennas_per_co)
    n_dc = -(-n_co // cos_per_dc)
    sites, links = [], []
    for i in range(n_antennas):
        radio = 4 + 2 * (i % 4)
        sites.append(f"  - {{name: ant{i + 1}, layer: antenna, radio: {{delay_ms: {radio}, delay_dev_ms: "
                     f"{radio / 4:g}, bw_mbps: 400}}, compute: {{cpu_cores: 4, memory_gib: 8}}}}")
        links.append(f"  - {{a: ant{i + 1}, b: co{i // antennas_per_co + 1}, delay_ms: {1 + (i % 3) * 0.5:g}, "
                     "delay_dev_ms: 0.2, bw_mbps: 1000}")
    for c in range(n_co):
        sites.append(f"  - {{name: co{c + 1}, layer: co, compute: {{cpu_cores: 6, gpus: 1, memory_gib: 32}}}}")
        links.append(f"  - {{a: co{c + 1}, b: dc{c // cos_per_dc + 1}, delay_ms: {4 + c % 2}, delay_dev_ms: 0.5, "
                     "bw_mbps: 1000}")
    for d in range(n_dc):
        sites.append(f"  - {{name: dc{d + 1}, layer: dc, compute: {{cpu_cores: 12, gpus: 3, memory_gib: 128}}}}")
        links.append(f"  - {{a: dc{d + 1}, b: cloud, delay_ms: {30 + 10 * (d % 2)}, delay_dev_ms: 3, "
                     "bw_mbps: 1000}")
    sites.append("  - {name: cloud, layer: cloud, compute: {cpu_cores: 64, gpus: 16, memory_gib: 512}}")
    return "\n".join([f"name: {name or f'full-edge-{n_antennas}'}",
                      f"description: generated, full-edge-like with {n_antennas} antennas",
                      "sites:", *sites, "links:", *links, ""])


def write_full_edge_like(path: str | Path, n_antennas: int, **shape: int) -> Path:
    """Writes `full_edge_like_yaml(n_antennas, **shape)` to `path` and returns it."""
    path = Path(path)
    path.write_text(full_edge_like_yaml(n_antennas, **shape))
    return path
