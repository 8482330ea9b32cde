import cadquery as cq

result = cq.Workplane("YZ").rect(60, 60).rect(50, 50).extrude(80)
