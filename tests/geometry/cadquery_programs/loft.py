import cadquery as cq

result = (cq.Workplane("XY").rect(20, 20).workplane(offset=15).circle(6).loft(combine=True))
