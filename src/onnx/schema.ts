/**
 * The ONNX protobuf schema (IR version 10 subset that round-trips every field of ModelProto a
 * backbone uses), as a protobufjs JSON descriptor. Field numbers follow the ONNX specification
 * (onnx/onnx.proto); unknown fields would be dropped by protobufjs, so every ModelProto, GraphProto,
 * NodeProto, TensorProto and FunctionProto field is listed.
 */
const str = (id: number) => ({ type: 'string', id });
const rep = (type: string, id: number) => ({ rule: 'repeated', type, id });

export const ONNX_SCHEMA = {
  nested: {
    onnx: {
      nested: {
        AttributeProto: {
          fields: {
            name: str(1),
            refAttrName: str(21),
            docString: str(13),
            type: { type: 'AttributeType', id: 20 },
            f: { type: 'float', id: 2 },
            i: { type: 'int64', id: 3 },
            s: { type: 'bytes', id: 4 },
            t: { type: 'TensorProto', id: 5 },
            g: { type: 'GraphProto', id: 6 },
            sparseTensor: { type: 'SparseTensorProto', id: 22 },
            tp: { type: 'TypeProto', id: 14 },
            floats: rep('float', 7),
            ints: rep('int64', 8),
            strings: rep('bytes', 9),
            tensors: rep('TensorProto', 10),
            graphs: rep('GraphProto', 11),
            sparseTensors: rep('SparseTensorProto', 23),
            typeProtos: rep('TypeProto', 15),
          },
          nested: {
            AttributeType: {
              values: {
                UNDEFINED: 0, FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, GRAPH: 5, SPARSE_TENSOR: 11, TYPE_PROTO: 13,
                FLOATS: 6, INTS: 7, STRINGS: 8, TENSORS: 9, GRAPHS: 10, SPARSE_TENSORS: 12, TYPE_PROTOS: 14,
              },
            },
          },
        },
        ValueInfoProto: {
          fields: { name: str(1), type: { type: 'TypeProto', id: 2 }, docString: str(3), metadataProps: rep('StringStringEntryProto', 4) },
        },
        NodeProto: {
          fields: {
            input: rep('string', 1),
            output: rep('string', 2),
            name: str(3),
            opType: str(4),
            domain: str(7),
            overload: str(8),
            attribute: rep('AttributeProto', 5),
            docString: str(6),
            metadataProps: rep('StringStringEntryProto', 9),
          },
        },
        ModelProto: {
          fields: {
            irVersion: { type: 'int64', id: 1 },
            opsetImport: rep('OperatorSetIdProto', 8),
            producerName: str(2),
            producerVersion: str(3),
            domain: str(4),
            modelVersion: { type: 'int64', id: 5 },
            docString: str(6),
            graph: { type: 'GraphProto', id: 7 },
            metadataProps: rep('StringStringEntryProto', 14),
            trainingInfo: rep('TrainingInfoProto', 20),
            functions: rep('FunctionProto', 25),
          },
        },
        TrainingInfoProto: {
          fields: {
            initialization: { type: 'GraphProto', id: 1 },
            algorithm: { type: 'GraphProto', id: 2 },
            initializationBinding: rep('StringStringEntryProto', 3),
            updateBinding: rep('StringStringEntryProto', 4),
          },
        },
        StringStringEntryProto: { fields: { key: str(1), value: str(2) } },
        TensorAnnotation: { fields: { tensorName: str(1), quantParameterTensorNames: rep('StringStringEntryProto', 2) } },
        GraphProto: {
          fields: {
            node: rep('NodeProto', 1),
            name: str(2),
            initializer: rep('TensorProto', 5),
            sparseInitializer: rep('SparseTensorProto', 15),
            docString: str(10),
            input: rep('ValueInfoProto', 11),
            output: rep('ValueInfoProto', 12),
            valueInfo: rep('ValueInfoProto', 13),
            quantizationAnnotation: rep('TensorAnnotation', 14),
            metadataProps: rep('StringStringEntryProto', 16),
          },
        },
        TensorProto: {
          fields: {
            dims: rep('int64', 1),
            dataType: { type: 'int32', id: 2 },
            segment: { type: 'Segment', id: 3 },
            floatData: { rule: 'repeated', type: 'float', id: 4, options: { packed: true } },
            int32Data: { rule: 'repeated', type: 'int32', id: 5, options: { packed: true } },
            stringData: rep('bytes', 6),
            int64Data: { rule: 'repeated', type: 'int64', id: 7, options: { packed: true } },
            name: str(8),
            docString: str(12),
            rawData: { type: 'bytes', id: 9 },
            externalData: rep('StringStringEntryProto', 13),
            dataLocation: { type: 'DataLocation', id: 14 },
            doubleData: { rule: 'repeated', type: 'double', id: 10, options: { packed: true } },
            uint64Data: { rule: 'repeated', type: 'uint64', id: 11, options: { packed: true } },
            metadataProps: rep('StringStringEntryProto', 16),
          },
          nested: {
            Segment: { fields: { begin: { type: 'int64', id: 1 }, end: { type: 'int64', id: 2 } } },
            DataLocation: { values: { DEFAULT: 0, EXTERNAL: 1 } },
          },
        },
        SparseTensorProto: {
          fields: { values: { type: 'TensorProto', id: 1 }, indices: { type: 'TensorProto', id: 2 }, dims: rep('int64', 3) },
        },
        TensorShapeProto: {
          fields: { dim: rep('Dimension', 1) },
          nested: {
            Dimension: {
              oneofs: { value: { oneof: ['dimValue', 'dimParam'] } },
              fields: { dimValue: { type: 'int64', id: 1 }, dimParam: str(2), denotation: str(3) },
            },
          },
        },
        TypeProto: {
          oneofs: { value: { oneof: ['tensorType', 'sequenceType', 'mapType', 'optionalType', 'sparseTensorType'] } },
          fields: {
            tensorType: { type: 'Tensor', id: 1 },
            sequenceType: { type: 'Sequence', id: 4 },
            mapType: { type: 'Map', id: 5 },
            optionalType: { type: 'Optional', id: 9 },
            sparseTensorType: { type: 'SparseTensor', id: 8 },
            denotation: str(6),
          },
          nested: {
            Tensor: { fields: { elemType: { type: 'int32', id: 1 }, shape: { type: 'TensorShapeProto', id: 2 } } },
            Sequence: { fields: { elemType: { type: 'TypeProto', id: 1 } } },
            Map: { fields: { keyType: { type: 'int32', id: 1 }, valueType: { type: 'TypeProto', id: 2 } } },
            Optional: { fields: { elemType: { type: 'TypeProto', id: 1 } } },
            SparseTensor: { fields: { elemType: { type: 'int32', id: 1 }, shape: { type: 'TensorShapeProto', id: 2 } } },
          },
        },
        OperatorSetIdProto: { fields: { domain: str(1), version: { type: 'int64', id: 2 } } },
        FunctionProto: {
          fields: {
            name: str(1),
            input: rep('string', 4),
            output: rep('string', 5),
            attribute: rep('string', 6),
            attributeProto: rep('AttributeProto', 11),
            node: rep('NodeProto', 7),
            docString: str(8),
            opsetImport: rep('OperatorSetIdProto', 9),
            domain: str(10),
            overload: str(13),
            valueInfo: rep('ValueInfoProto', 12),
            metadataProps: rep('StringStringEntryProto', 14),
          },
        },
      },
    },
  },
} as const;
