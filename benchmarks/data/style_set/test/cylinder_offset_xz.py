import cadquery as cq

result = cq.Workplane("XZ").workplane(offset=20).circle(12.7).extrude(-8)
