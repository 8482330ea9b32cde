import cadquery as cq

def rib(x):
    return cq.Workplane("XY").center(x, 0).rect(3, 30).extrude(12)

body = cq.Workplane("XY").rect(60, 30).extrude(4)
for x in (-20, 0, 20):
    body = body.union(rib(x))
