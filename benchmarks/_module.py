"""The module every reloader edits in the benchmarks: one class, five functions."""

TEMPLATE = '''"""A small particle simulation used as a reload benchmark."""
import math


class Particle:
    """A point with a velocity."""

    def __init__(self, x, y):
        self.x = x
        self.y = y
        self.vx = 1.0
        self.vy = 0.5

    def step(self, dt):
        self.x += self.vx * dt
        self.y += self.vy * dt
        return {edit}

    def energy(self):
        return 0.5 * (self.vx ** 2 + self.vy ** 2)

    def distance(self, other):
        return math.hypot(self.x - other.x, self.y - other.y)

    def __repr__(self):
        return "Particle(%r, %r)" % (self.x, self.y)


def make(n):
    return [Particle(float(i), float(-i)) for i in range(n)]


def total_energy(particles):
    total = 0.0
    for p in particles:
        total += p.energy()
    return total


def centroid(particles):
    n = len(particles) or 1
    sx = sum(p.x for p in particles)
    sy = sum(p.y for p in particles)
    return (sx / n, sy / n)


def scale(particles, factor):
    for p in particles:
        p.vx *= factor
        p.vy *= factor
    return particles


def describe(p):
    return "particle at (%.1f, %.1f) v{edit}" % (p.x, p.y)
'''


def source(edit: int) -> str:
    """The module with the edit number ``edit`` (changes one method and one function)."""
    return TEMPLATE.replace("{edit}", str(edit))


def padded_source(edit: int, lines: int = 200) -> str:
    """:func:`source` grown to ``lines`` lines by plain helper functions after it.

    The helpers stay the same from edit to edit; only what :func:`source`
    changes differs, so each edit is one small real change of a bigger module.
    """
    text = source(edit)
    parts = [text]
    count = text.count("\n")
    k = 0
    while count + 5 <= lines:
        parts.append(f"\n\ndef helper_{k}(values):\n"
                     f"    return [v * {k + 2} + {k} for v in values if v > {k}]\n")
        count += 4
        k += 1
    parts.append("\n" * (lines - count))
    return "".join(parts)
