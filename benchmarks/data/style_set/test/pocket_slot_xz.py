import cadquery as cq

base = cq.Workplane("XZ").rect(120, 80).extrude(30)
slot = cq.Workplane("XZ").workplane(offset=20).slot2D(60, 20).extrude(10)
result = base.cut(slot)
