"""Find cross-device collectives inside compiled loops (HLO text of a compiled executable)."""
import re

COLLECTIVES = ("all-reduce", "all-gather", "collective-permute", "all-to-all", "reduce-scatter")


def _computations(hlo):
    comps, name = {}, None
    for line in hlo.splitlines():
        m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) ", line)
        if m and line.rstrip().endswith("{"):
            name = m.group(1)
            comps[name] = []
        elif name is not None:
            comps[name].append(line)
    return {k: "\n".join(v) for k, v in comps.items()}


def collectives_in_loops(hlo):
    """Collective op names found in while-loop bodies/conditions (and everything they call)."""
    comps = _computations(hlo)
    refs = re.compile(r"(?:body|condition|to_apply|calls)=%?([\w.\-]+)|branch_computations=\{([^}]*)\}")

    def called(text):
        out = []
        for a, b in refs.findall(text):
            out += [a] if a else [s.strip().lstrip("%") for s in b.split(",")]
        return out

    roots = [n for text in comps.values() for line in text.splitlines() if " while(" in line for n in called(line)]
    seen, stack = set(), list(roots)
    while stack:
        n = stack.pop()
        if n in seen or n not in comps:
            continue
        seen.add(n)
        stack += called(comps[n])
    return sorted({op for n in seen for op in COLLECTIVES if op + "(" in comps[n] or op + "-start(" in comps[n]})
