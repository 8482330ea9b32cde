import cadquery as cq

result = cq.Workplane("XY").box(80, 80, 20).union(cq.Workplane("XY").workplane(offset=10).circle(15).extrude(40))
