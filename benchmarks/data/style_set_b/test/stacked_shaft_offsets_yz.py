import cadquery as cq

result = cq.Workplane("YZ").circle(25).extrude(30).union(cq.Workplane("YZ").workplane(offset=30).circle(12).extrude(50))
