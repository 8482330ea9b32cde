import cadquery as cq


def peg(height, radius=2.0):
    return cq.Workplane("XY").circle(radius).extrude(height)


base = cq.Workplane("XY").box(40, 20, 4)
for i in range(4):
    base = base.union(peg(6 + i).translate((-15 + 10 * i, 0, 2)))
show_object(base)
