"""A Python plugin for the tests: MyScale (y = scale * x), an IPluginV3 and its creator, for
either TensorRT module (``plugin_creators(trt)``)."""
import numpy as np


def plugin_creators(trt):
    class MyScalePlugin(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild,
                        trt.IPluginV3OneRuntime):
        def __init__(self, scale=1.0):
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.num_outputs = 1
            self.plugin_namespace = ""
            self.plugin_name = "MyScale"
            self.plugin_version = "1"
            self.scale = float(scale)

        def get_capability_interface(self, kind):
            return self

        def get_output_data_types(self, input_types):
            return [input_types[0]]

        def get_output_shapes(self, inputs, shape_inputs, expr_builder):
            return [inputs[0]]

        def get_fields_to_serialize(self):
            return trt.PluginFieldCollection([trt.PluginField(
                "scale", np.array([self.scale], dtype=np.float32), trt.PluginFieldType.FLOAT32)])

        def configure_plugin(self, inputs, outputs):
            pass

        def on_shape_change(self, inputs, outputs):
            pass

        def supports_format_combination(self, pos, in_out, num_inputs):
            desc = in_out[pos].desc
            return desc.format == trt.TensorFormat.LINEAR and desc.type == trt.DataType.FLOAT

        def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
            raise RuntimeError("MyScale runs on a GPU only")

        def attach_to_context(self, context):
            return self.clone()

        def set_tactic(self, tactic):
            pass

        def clone(self):
            return MyScalePlugin(self.scale)

    class MyScaleCreator(trt.IPluginCreatorV3One):
        def __init__(self):
            trt.IPluginCreatorV3One.__init__(self)
            self.name = "MyScale"
            self.plugin_namespace = ""
            self.plugin_version = "1"
            self.field_names = trt.PluginFieldCollection([trt.PluginField(
                "scale", np.array([], dtype=np.float32), trt.PluginFieldType.FLOAT32)])

        def create_plugin(self, name, fields, phase):
            scale = 1.0
            for item in fields:
                if item.name == "scale":
                    scale = float(np.asarray(item.data)[0])
            return MyScalePlugin(scale)

    return [MyScaleCreator()]
