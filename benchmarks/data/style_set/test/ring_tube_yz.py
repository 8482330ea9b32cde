import cadquery as cq

result = cq.Workplane("YZ").circle(15).circle(12).extrude(200)
