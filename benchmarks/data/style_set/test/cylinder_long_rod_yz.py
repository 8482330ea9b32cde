import cadquery as cq

result = cq.Workplane("YZ").circle(5).extrude(400)
