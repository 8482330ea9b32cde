import cadquery as cq

result = cq.Workplane("YZ").workplane(offset=30).rect(400, 100).extrude(250)
