import cadquery as cq

wall = cq.Workplane("XY").box(150, 20, 80)
result = wall.cut(cq.Workplane("XZ").rect(60, 30).extrude(50, both=True))
